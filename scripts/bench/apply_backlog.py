"""Apply benchmark (issue 17): a backlog already durable in the database, the daemon starts;
how fast is it applied? The applier's half of ingest.py, without the broker's flood.

    .venv/bin/python scripts/bench/apply_backlog.py [--events 20000] [--runs 1]
        [--py-spy [--py-spy-args=--gil]] [--workdir DIR]

Per run: the database is made and migrated as the daemon would (`connect_sync`), and N
order.created events (ingest.py's: three lines, one station) are stored in it as received
and not applied, through `Pipeline.accept_batch` in transactions of 64, exactly as the
intake stores them. Then the daemon starts on it (offline printer: jobs stay queued; a
broker of this script's own, so timelines and the daemon's state are published as usual)
and `SELECT COUNT(*) FROM events WHERE applied = 1` is polled read-only every 50 ms until it
holds all N. The rate is from the daemon's first `event_applied` log line to the last
event applied; the rate from process spawn is shown too.

ingest.py measures intake and apply together; on a loaded machine its runs can stall in a
reconnect loop (the broker's resend of a big backlog against a 10 s operation timeout, see
README "apply (issue 17)"), which this bench does not depend on.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OFFLINE_PRINTER, Broker, DaemonRun, created_event, table, write_config

from edge.daemon import load_station, plan_of
from edge.ingest.pipeline import Incoming, Pipeline
from edge.orders.apply import Applier
from edge.store.db import DB_FILENAME, connect_sync
from edge.store.tx import Tx

POLL = 0.05
RUN_TIMEOUT = 600.0
CHUNK = 64


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def applied_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events WHERE applied = 1").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def store_backlog(config: Path, events: int) -> float:
    """The backlog stored as the intake stores it, not applied; seconds it took."""
    cfg = load_station(config)
    conn = connect_sync(cfg.state_dir / DB_FILENAME)
    began = time.monotonic()
    try:
        pipeline = Pipeline(cfg.root, Applier(plan_of(cfg)))
        messages = [created_event(cfg.site, n)[:2] for n in range(events)]
        now = datetime.now(UTC)
        for start in range(0, events, CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            pipeline.accept_batch(Tx(conn), [Incoming(t, p) for t, p in
                                             messages[start:start + CHUNK]], now)
            conn.execute("COMMIT")
    finally:
        conn.close()
    return time.monotonic() - began


def one_run(broker: Broker, workdir: Path, k: int, events: int, profile: bool,
            profile_args: str) -> dict[str, Any]:
    site = f"apply-{k}"
    run_dir = workdir / site
    cfg = write_config(run_dir / "station.yaml", site=site, broker_port=broker.port,
                       client_id=f"bench-{site}", printer=OFFLINE_PRINTER,
                       state_dir=run_dir / "state")
    store_s = store_backlog(cfg, events)
    daemon = DaemonRun(cfg, run_dir / "daemon.log")
    if profile:
        daemon.profile_to = run_dir / "py-spy.txt"
        daemon.profile_args = tuple(profile_args.split())
    daemon.start(wait_ready=False)
    deadline = time.monotonic() + RUN_TIMEOUT
    done_at = 0.0
    try:
        while time.monotonic() < deadline:
            if applied_count(daemon.db) >= events:
                done_at = time.time()
                break
            if daemon.proc is not None and daemon.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {daemon.tail()}")
            time.sleep(POLL)
        else:
            raise TimeoutError(f"daemon applied {applied_count(daemon.db)} of {events}")
    finally:
        code = daemon.stop()
    if code != 0:
        raise RuntimeError(f"daemon exit {code}: {daemon.tail()}")
    first = last = None
    with daemon.log_path.open("rb") as fh:
        for raw in fh:
            if b'"event_applied"' in raw:
                stamp = _ts(json.loads(raw)["timestamp"])
                first = stamp if first is None else first
                last = stamp
    assert first is not None and last is not None
    return {"run": k, "store_s": store_s, "spawn_to_done_s": done_at - daemon.started_at,
            "rate_first": events / max(1e-9, last - first),
            "rate_spawn": events / (done_at - daemon.started_at)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--py-spy", action="store_true", help="record the daemon with py-spy")
    parser.add_argument("--py-spy-args", default="--gil")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        broker = Broker(workdir / "broker").start()
        try:
            rows = []
            for k in range(1, args.runs + 1):
                r = one_run(broker, workdir, k, args.events, args.py_spy, args.py_spy_args)
                print(f"run {k}: {r['rate_first']:,.0f} applied/s (first to last applied), "
                      f"{r['rate_spawn']:,.0f}/s from spawn", flush=True)
                rows.append(r)
        finally:
            broker.stop()
    print(f"\napply of {args.events:,} stored order.created events (offline printer)\n")
    print(table(["run", "stored in s", "spawn->all applied s", "applied/s (1st->last)",
                 "applied/s (spawn)"],
                [[r["run"], f"{r['store_s']:.1f}", f"{r['spawn_to_done_s']:.1f}",
                  f"{r['rate_first']:,.0f}", f"{r['rate_spawn']:,.0f}"] for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
