"""Resources benchmark (issue 12): CPU, storage written and memory per order, for the daemon
and, in the same run, for a naive consumer doing the same printing.

    .venv/bin/python scripts/bench/resources.py [--orders 3000] [--rate 50]
        [--rss-every N] [--idle 5] [--max-lag 30] [--json PATH] [--workdir DIR] [--strace]
        [--daemon-python PATH] [--daemon-env NAME=VALUE ...]

The kitchen of issues 12 and 17: two virtual printers (--no-png), two stations (grill: grill
and mains; bar: drinks), orders of three lines over both (two tickets each), an upstream (the
fake upstream in its own process) syncing, the HTTP listener on, discovery as shipped. The
daemon runs as `PYTHON -m edge run --config FILE` (PYTHON: --daemon-python, by default this
script's own interpreter; scripts/bench/prod-venv.sh makes a production-like venv for it,
`pip install .` and nothing else, as scripts/install.sh does); its output goes through a pipe
that this script copies to a file (as journald would take it), so the daemon's own
`write_bytes` are its database and nothing else. The naive consumer
(scripts/bench/_naive.py --transport network) is aiomqtt + python-escpos `Network` printers,
nothing durable, printing the same two tickets per order to its own two virtual printers.

Both are fed at the same time: every 1/rate s one order to each (QoS 1, an absolute
schedule), so the machine's noise falls on both. Measured from /proc, all threads together:

- CPU: utime + stime (/proc/PID/stat), from after the warm-up until every ticket is printed
  and (daemon) every outbox record is accepted by the upstream; divided by the orders.
- Storage: write_bytes (/proc/PID/io: bytes the process caused to be sent to the storage
  layer, counted when a page is dirtied, so a page rewritten after its writeback counts
  again); also the growth of the SQLite files (database + WAL) and of the daemon's log.
- Memory: VmRSS every --rss-every orders (default a tenth of the run) and at the end; VmHWM.

The idle cost (CPU and bytes per second with nothing arriving) is measured first, so the
per-order figures can be read against it.

The virtual printers write a few small files per ticket; every 1,000 orders a thread of this
script deletes them and makes the printers forget their job lists (POST /reset), so a long run
(`--orders 100000 --rss-every 10000`: about 35 minutes at the default 50/s) neither fills
the disk nor grows the printers. Counting uses the printers' `last_seq`, which a reset keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    KITCHEN_STATIONS,
    ROOT,
    Broker,
    Consumer,
    DaemonRun,
    FakeUpstreamProc,
    NaiveProc,
    ProcSample,
    VPrinterProc,
    free_port,
    fs_type,
    kitchen_config,
    kitchen_event,
    outbox_pending,
    paho_client,
    printed,
    sqlite_bytes,
    start_printer,
    stop_on_signals,
    stop_pid,
    table,
)

EDGE_SITE = "res-edge"
NAIVE_SITE = "res-naive"
WARMUP = 5
SETTLE_TIMEOUT = 120.0
PRUNE_EVERY = 1000   # orders between two clean-ups of the printers' files
LAG_CHECK_S = 5.0   # how often (in publishing time) the consumers' backlog is looked at


def prune(printers: list[VPrinterProc]) -> None:
    """Forget what the printers hold: their job files and lists (not needed here)."""
    for p in printers:
        p.reset()
        for path in p.out_dir.iterdir():
            if path.suffix in (".bin", ".txt"):
                path.unlink(missing_ok=True)
        jsonl = p.out_dir / "jobs.jsonl"
        if jsonl.exists():
            jsonl.write_bytes(b"")


def strace_start(pid: int, out: Path, *, every_call: bool = False) -> subprocess.Popen[bytes]:
    """Count the daemon's syncs and writes (all threads) until strace_stop; `every_call`:
    log each one instead (file, offset, length, the first bytes: `write_map.py` reads it)."""
    what = (["-y", "-xx", "-s", "8", "-e", "trace=fsync,fdatasync,pwrite64,ftruncate"]
            if every_call else ["-c", "-e", "trace=fsync,fdatasync,pwrite64,write"])
    proc = subprocess.Popen(
        ["strace", "-f", *what, "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)   # attaching to every thread takes a moment
    return proc


def strace_stop(proc: subprocess.Popen[bytes], out: Path) -> dict[str, int]:
    """strace writes its table when interrupted: syscall -> calls."""
    os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if (len(parts) >= 5 and parts[0][0].isdigit() and parts[3].isdigit()
                and parts[-1] != "total"):
            calls[parts[-1]] = int(parts[3])
    return calls


def wait_until(what: str, check: Any, timeout: float) -> float:
    """Poll `check()` until true; returns the seconds it took."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - began


# Libraries the dev venv holds for the tests that the daemon's own libraries import when they
# are present (structlog: rich and pygments; httpx: click; httpcore: trio; paho: PySocks). A
# production install has none of them; `edge run` marks them absent (edge.cli.DEV_EXTRAS).
DEV_ONLY = ("rich", "pygments", "click", "trio", "socks")


def describe_python(python: str) -> dict[str, Any]:
    """What the daemon will run on: the interpreter, where `edge` comes from (run from the
    checkout, as the daemon is), and which dev-only libraries that venv holds."""
    probe = ("import importlib.util as u, json, sys, edge; print(json.dumps({'version': "
             "sys.version.split()[0], 'prefix': sys.prefix, 'edge': edge.__file__, "
             f"'dev_only': [m for m in {DEV_ONLY!r} if u.find_spec(m)]}}))")
    out = subprocess.run([python, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    info: dict[str, Any] = json.loads(out.stdout)
    info["python"] = python
    return info


def checkpoint(n: int, sides: list[Consumer], daemon: DaemonRun, upstream: FakeUpstreamProc,
               base: dict[str, ProcSample], log_base: int) -> dict[str, Any]:
    row: dict[str, Any] = {"orders": n, "at": time.monotonic(),
                           "load1": os.getloadavg()[0]}
    for side in sides:
        s = side.sample()
        row[side.who] = {"rss_kib": s.rss_kib, "hwm_kib": s.hwm_kib,
                         "cpu_s": s.cpu_s - base[side.who].cpu_s,
                         "write_bytes": s.write_bytes - base[side.who].write_bytes,
                         "printed": side.printed()}
    row["sqlite"] = sqlite_bytes(daemon.db)
    row["log_bytes"] = daemon.log_path.stat().st_size - log_base
    row["upstream_accepted"] = int(upstream.state()["accepted"])
    return row


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    kind = fs_type(workdir)
    if kind in ("tmpfs", "ramfs"):
        print(f"warning: {workdir} is on {kind}: write_bytes will not count the database "
              "(use --workdir on a disk)", file=sys.stderr)
    every = args.rss_every or max(1, args.orders // 10)
    broker = Broker(workdir / "broker").start()
    stack: list[Any] = []
    try:
        edge_printers = {pid: start_printer(workdir, f"edge-{pid}", stack)
                         for pid, _ in KITCHEN_STATIONS.values()}
        naive_printers = {sid: start_printer(workdir, f"naive-{sid}", stack)
                          for sid in KITCHEN_STATIONS}
        upstream = FakeUpstreamProc(workdir / "upstream").start()
        stack.append(upstream)
        cfg = kitchen_config(
            workdir / "edge" / "station.yaml", site=EDGE_SITE, broker_port=broker.port,
            client_id="bench-res-edge",
            printers={pid: p.address for pid, p in edge_printers.items()},
            state_dir=workdir / "edge" / "state", upstream_url=upstream.url,
            token_file=upstream.token_file, http_port=free_port(), log_level=args.log_level)
        daemon = DaemonRun(cfg, workdir / "edge" / "daemon.log", log_pipe=True,
                           python=args.daemon_python,
                           extra_env=dict(kv.split("=", 1) for kv in args.daemon_env))
        daemon.start()
        stack.append(daemon)
        naive_proc = NaiveProc(
            broker.port, NAIVE_SITE,
            {sid: (naive_printers[sid].port, cats) for sid, (_, cats) in KITCHEN_STATIONS.items()},
            transport="network")
        stack.append(naive_proc)
        assert daemon.proc is not None
        edge = Consumer("daemon", EDGE_SITE, list(edge_printers.values()), pid=daemon.proc.pid,
                        db=daemon.db)
        naive = Consumer("naive", NAIVE_SITE, list(naive_printers.values()), pid=naive_proc.pid)
        sides = [edge, naive]
        tracer: subprocess.Popen[bytes] | None = None
        client = paho_client(broker.port, "bench-res-pos")
        try:
            # Warm-up: connections, caches, the sender's first request.
            for side in sides:
                for k in range(WARMUP):
                    topic, payload, _ = kitchen_event(side.site, k, prefix="warm")
                    client.publish(topic, payload, qos=1)
            for side in sides:
                wait_until(f"{side.who} warm-up", lambda s=side: s.printed() >= 2 * WARMUP, 30)
            wait_until("upstream syncing", lambda: upstream.state()["accepted"] > 0, 30)
            wait_until("outbox drained", lambda: outbox_pending(daemon.db) == 0, 30)
            prune(edge.printers + naive.printers)

            # Idle: nothing arriving.
            idle0 = {s.who: s.sample() for s in sides}
            time.sleep(args.idle)
            idle1 = {s.who: s.sample() for s in sides}
            idle = {who: {"cpu_ms_per_s": (idle1[who].cpu_s - idle0[who].cpu_s) * 1000
                          / (idle1[who].at - idle0[who].at),
                          "write_kib_per_s": (idle1[who].write_bytes - idle0[who].write_bytes)
                          / 1024 / (idle1[who].at - idle0[who].at)}
                    for who in idle0}
            print(f"idle ({args.idle:g}s): " + ", ".join(
                f"{who} {v['cpu_ms_per_s']:.1f} CPU ms/s, {v['write_kib_per_s']:.1f} KiB/s "
                "written" for who, v in idle.items()), flush=True)
            # RSS before the first order: what the imports and the start cost, apart from
            # anything that grows with orders.
            print("RSS before the first order: " + ", ".join(
                f"{who} {idle1[who].rss_kib / 1024:.1f} MB" for who in idle1), flush=True)
            before_first = {who: {"rss_kib": idle1[who].rss_kib, "hwm_kib": idle1[who].hwm_kib}
                            for who in idle1}

            if args.strace:
                tracer = strace_start(edge.pid, workdir / "strace.txt")
            elif args.strace_calls:
                tracer = strace_start(edge.pid, workdir / "strace-calls.txt", every_call=True)
            for side in sides:
                side.printed_base = printed(side.printers)
            base = {s.who: s.sample() for s in sides}
            sqlite_base = sqlite_bytes(daemon.db)
            log_base = daemon.log_path.stat().st_size
            accepted_base = int(upstream.state()["accepted"])
            began = time.monotonic()
            checkpoints: list[dict[str, Any]] = []
            infos = []
            start = time.monotonic() + 0.05
            published = 0
            printers = edge.printers + naive.printers
            pruner = threading.Thread()
            fell_behind_at: int | None = None
            lag_every = max(1, int(args.rate * LAG_CHECK_S))
            for n in range(args.orders):
                delay = start + n / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                for side in sides:
                    topic, payload, _ = kitchen_event(side.site, n, prefix="r")
                    infos.append(client.publish(topic, payload, qos=1))
                published = n + 1
                if published % every == 0 or published == args.orders:
                    for info in infos:
                        info.wait_for_publish(timeout=30)
                    infos.clear()
                    row = checkpoint(published, sides, daemon, upstream, base, log_base)
                    checkpoints.append(row)
                    print(f"{published:>7} orders, {row['at'] - began:6.0f}s: daemon RSS "
                          f"{row['daemon']['rss_kib'] / 1024:.1f} MB (VmHWM "
                          f"{row['daemon']['hwm_kib'] / 1024:.1f}), printed "
                          f"{row['daemon']['printed']}; naive RSS "
                          f"{row['naive']['rss_kib'] / 1024:.1f} MB, printed "
                          f"{row['naive']['printed']}; load {row['load1']:.2f}", flush=True)
                if published % PRUNE_EVERY == 0 and not pruner.is_alive():
                    # Off the publishing thread: deleting thousands of files must not hold
                    # back the schedule (the orders would then come in a burst).
                    pruner = threading.Thread(target=prune, args=(printers,), daemon=True)
                    pruner.start()
                if published % lag_every == 0 and args.max_lag > 0:
                    # Orders whose tickets are not out yet: a consumer that cannot keep up at
                    # this rate makes every per-order figure (and RSS) about its backlog.
                    behind = {s.who: published - s.printed() / 2 for s in sides}
                    if max(behind.values()) > args.max_lag * args.rate:
                        fell_behind_at = published
                        print(f"{published:>7} orders: stopped publishing, behind by "
                              + ", ".join(f"{who} {v:,.0f} orders" for who, v in behind.items())
                              + f" (over --max-lag {args.max_lag:g}s at {args.rate:g}/s); "
                              f"load {os.getloadavg()[0]:.2f}", flush=True)
                        break
            for info in infos:
                info.wait_for_publish(timeout=30)
            publish_s = time.monotonic() - began
            if pruner.is_alive():
                pruner.join()
            want = 2 * published
            settle = SETTLE_TIMEOUT + published / 100
            done_at: dict[str, float] = {}

            def all_printed() -> bool:
                for side in sides:
                    if side.who not in done_at and side.printed() >= want:
                        done_at[side.who] = time.monotonic()
                return len(done_at) == len(sides)

            try:
                wait_until("every ticket printed", all_printed, settle)
                wait_until("outbox drained", lambda: outbox_pending(daemon.db) == 0, settle)
            except TimeoutError as exc:
                print(f"gave up waiting: {exc}", flush=True)
            done_at.setdefault("upstream", time.monotonic())
            for side in sides:
                done_at.setdefault(side.who, time.monotonic())
            printed_end = {s.who: s.printed() for s in sides}
            end = {s.who: s.sample() for s in sides}
            syscalls = None
            if tracer is not None and args.strace:
                syscalls = strace_stop(tracer, workdir / "strace.txt")
            elif tracer is not None:
                strace_stop(tracer, workdir / "strace-calls.txt")
            sqlite_end = sqlite_bytes(daemon.db)
            log_end = daemon.log_path.stat().st_size
            accepted = int(upstream.state()["accepted"]) - accepted_base
        finally:
            client.loop_stop()
            client.disconnect()
            if tracer is not None and tracer.poll() is None:
                stop_pid(tracer, sig=signal.SIGINT)
    finally:
        for item in reversed(stack):
            item.stop()
        broker.stop()

    n = published
    per: dict[str, dict[str, Any]] = {}
    for side in sides:
        b, e = base[side.who], end[side.who]
        per[side.who] = {
            "cpu_ms_per_order": (e.cpu_s - b.cpu_s) * 1000 / n,
            "write_kib_per_order": (e.write_bytes - b.write_bytes) / 1024 / n,
            "rss_mb_end": e.rss_kib / 1024,
            "rss_mb_max": max([c[side.who]["rss_kib"] for c in checkpoints] + [e.rss_kib]) / 1024,
            "hwm_mb": e.hwm_kib / 1024,
            "window_s": e.at - b.at,
            "done_after_publish_s": done_at[side.who] - began - publish_s,
            "tickets_printed": printed_end[side.who],
            "tickets_expected": 2 * n,
        }
    db_growth = sum(sqlite_end[k] - sqlite_base[k] for k in ("db", "-wal"))
    per["daemon"].update(
        sqlite_kib_per_order=db_growth / 1024 / n,
        sqlite_end_mb={k: v / 1e6 for k, v in sqlite_end.items()},
        log_kib_per_order=(log_end - log_base) / 1024 / n,
        upstream_accepted=accepted,
        synced_after_publish_s=done_at["upstream"] - began - publish_s,
    )
    if syscalls is not None:
        per["daemon"]["syscalls_per_order"] = {k: v / n for k, v in syscalls.items()}
    kept_up = fell_behind_at is None and all(
        per[side.who]["tickets_printed"] >= 2 * n for side in sides)
    return {"orders": n, "orders_asked": args.orders, "kept_up": kept_up,
            "fell_behind_at": fell_behind_at, "rate": args.rate, "rss_every": every,
            "fs": kind, "daemon_python": args.daemon_info, "before_first": before_first,
            "daemon_env": args.daemon_env,
            "publish_s": publish_s, "idle": idle, "per_order": per,
            "checkpoints": checkpoints}


def report(r: dict[str, Any], wall: float) -> None:
    d, nv = r["per_order"]["daemon"], r["per_order"]["naive"]
    print()
    print(f"{r['orders']:,} orders at {r['rate']:g}/s to each consumer, side by side "
          f"(2 tickets per order; database on {r['fs']}); wall time {wall:.0f}s")
    py = r["daemon_python"]
    print(f"daemon on {py['python']} (Python {py['version']}, edge from {py['edge']}); "
          f"dev-only libraries installed: {', '.join(py['dev_only']) or 'none'}"
          + (f"; environment {' '.join(r['daemon_env'])}" if r["daemon_env"] else ""))
    if not r["kept_up"]:
        print(f"NOT KEPT UP: asked for {r['orders_asked']:,} orders, published {r['orders']:,}; "
              f"tickets printed: daemon {d['tickets_printed']:,}, naive "
              f"{nv['tickets_printed']:,} of {d['tickets_expected']:,} each. The figures "
              "below are about a backlog, not a kitchen keeping up.")
    rows = [
        ["CPU ms per order (utime+stime)", f"{d['cpu_ms_per_order']:.2f}",
         f"{nv['cpu_ms_per_order']:.2f}", _ratio(d["cpu_ms_per_order"], nv["cpu_ms_per_order"])],
        ["KiB written per order (write_bytes)", f"{d['write_kib_per_order']:.1f}",
         f"{nv['write_kib_per_order']:.1f}", "-"],
        ["SQLite files' growth, KiB per order", f"{d['sqlite_kib_per_order']:.2f}", "-", "-"],
        ["log, KiB per order (to journald)", f"{d['log_kib_per_order']:.2f}", "-", "-"],
        ["RSS at the end, MB", f"{d['rss_mb_end']:.1f}", f"{nv['rss_mb_end']:.1f}",
         _ratio(d["rss_mb_end"], nv["rss_mb_end"])],
        ["RSS max at checkpoints, MB", f"{d['rss_mb_max']:.1f}", f"{nv['rss_mb_max']:.1f}",
         _ratio(d["rss_mb_max"], nv["rss_mb_max"])],
        ["VmHWM (peak RSS), MB", f"{d['hwm_mb']:.1f}", f"{nv['hwm_mb']:.1f}", "-"],
        ["idle CPU ms/s", f"{r['idle']['daemon']['cpu_ms_per_s']:.1f}",
         f"{r['idle']['naive']['cpu_ms_per_s']:.1f}", "-"],
        ["idle KiB written/s", f"{r['idle']['daemon']['write_kib_per_s']:.1f}",
         f"{r['idle']['naive']['write_kib_per_s']:.1f}", "-"],
        ["last ticket, s after the last publish", f"{d['done_after_publish_s']:.1f}",
         f"{nv['done_after_publish_s']:.1f}", "-"],
    ]
    print(table(["per order", "daemon", "naive", "ratio"], rows))
    if "syscalls_per_order" in d:
        print("daemon system calls per order, counted by strace -f -c (which slows the "
              "daemon: its CPU figures above are not comparable): " + ", ".join(
                  f"{k} {v:.2f}" for k, v in sorted(d["syscalls_per_order"].items())))
    print(f"upstream accepted {d['upstream_accepted']:,} records "
          f"({d['upstream_accepted'] / r['orders']:.1f} per order), outbox empty "
          f"{d['synced_after_publish_s']:.1f}s after the last publish; SQLite at the end: "
          + ", ".join(f"{k} {v:.1f} MB" for k, v in d["sqlite_end_mb"].items()))
    print()
    b = r["before_first"]
    rows = [["before", f"{b['daemon']['rss_kib'] / 1024:.1f}",
             f"{b['daemon']['hwm_kib'] / 1024:.1f}", f"{b['naive']['rss_kib'] / 1024:.1f}",
             "-", "-", "-", "-", "-", "-", "-"]]
    for c in r["checkpoints"]:
        rows.append([f"{c['orders']:,}", f"{c['daemon']['rss_kib'] / 1024:.1f}",
                     f"{c['daemon']['hwm_kib'] / 1024:.1f}",
                     f"{c['naive']['rss_kib'] / 1024:.1f}",
                     f"{c['daemon']['cpu_s'] * 1000 / c['orders']:.2f}",
                     f"{c['daemon']['write_bytes'] / 1024 / c['orders']:.1f}",
                     f"{(c['sqlite']['db'] + c['sqlite']['-wal']) / 1e6:.1f}",
                     c["daemon"]["printed"], c["naive"]["printed"], c["upstream_accepted"],
                     f"{c['load1']:.2f}"])
    print(f"every {r['rss_every']:,} orders (cumulative per-order figures since the start)")
    print(table(["orders", "daemon RSS MB", "daemon VmHWM MB", "naive RSS MB",
                 "daemon CPU ms/order", "daemon KiB/order", "SQLite MB", "daemon tickets",
                 "naive tickets",
                 "upstream accepted", "load"], rows))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}" if b else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="orders per second to each consumer")
    parser.add_argument("--rss-every", type=int, default=0, metavar="N",
                        help="a checkpoint (RSS, CPU, bytes) every N orders "
                             "(default: a tenth of the run)")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds of idle measurement before the run")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--workdir", help="keep logs and databases here (default: a temp dir)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--max-lag", type=float, default=30.0, metavar="SECONDS",
                        help="stop publishing when a consumer is this many seconds' worth of "
                             "orders behind (0: never); the report then says NOT KEPT UP")
    parser.add_argument("--strace", action="store_true",
                        help="count the daemon's fsync/fdatasync/pwrite64/write calls per "
                             "order with strace (slows the daemon; CPU figures then do not "
                             "count)")
    parser.add_argument("--daemon-python", default=sys.executable, metavar="PATH",
                        help="the interpreter the daemon runs under (default: this one, the "
                             "dev venv); e.g. .venv-prod/bin/python from "
                             "scripts/bench/prod-venv.sh, a production-like install. The "
                             "daemon still runs this checkout's edge/; the bench's own tools "
                             "stay on this interpreter")
    parser.add_argument("--daemon-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the daemon only (repeatable), e.g. "
                             "MALLOC_ARENA_MAX=2")
    parser.add_argument("--strace-calls", action="store_true",
                        help="log each of the daemon's pwrite64 and syncs with strace into "
                             "WORKDIR/strace-calls.txt, for write_map.py (slows the daemon)")
    args = parser.parse_args()
    args.daemon_info = describe_python(args.daemon_python)
    print(f"daemon python: {args.daemon_info['python']} (Python {args.daemon_info['version']}, "
          f"edge from {args.daemon_info['edge']}); dev-only libraries installed: "
          f"{', '.join(args.daemon_info['dev_only']) or 'none'}", flush=True)
    stop_on_signals()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-resources-") as tmp:
        workdir = Path(args.workdir or tmp)
        result = run(args, workdir)
    wall = time.monotonic() - started
    result["wall_s"] = wall
    report(result, wall)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
