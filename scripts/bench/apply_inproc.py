"""The applier's own cost, in process: no broker, no daemon, no event loop.

    .venv/bin/python scripts/bench/apply_inproc.py [--orders 2000] [--kitchen] [--profile]

Stores N order.created events (ingest.py's, or with --kitchen resources.py's three lines over
two stations) with `Pipeline.accept_batch` in transactions of 64, then applies them with
`Pipeline.apply_pending` in passes of 64 (the daemon's `APPLY_CHUNK`), each pass its own
transaction, and prints the CPU time (this process's, not wall time: the machine is shared)
per order for both steps. `--profile` adds a cProfile of the apply step. The database is a
temp file with `synchronous=NORMAL` (no fsync): what is measured is Python and SQL.

Run it from two checkouts in the same minutes to compare; a few runs each, the load moves it.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import KITCHEN_STATIONS, created_event, kitchen_event

from edge.config.models import StationConfig
from edge.ingest.pipeline import Incoming, Pipeline
from edge.orders.apply import Applier, Plan
from edge.store.db import connect_sync
from edge.store.tx import Tx

CHUNK = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--kitchen", action="store_true",
                        help="two stations, two tickets per order (resources.py's orders)")
    parser.add_argument("--profile", action="store_true", help="cProfile the apply step")
    args = parser.parse_args()

    if args.kitchen:
        stations = tuple(StationConfig(id=sid, printer=pid, categories=cats)
                         for sid, (pid, cats) in KITCHEN_STATIONS.items())
        make = kitchen_event
    else:
        stations = (StationConfig(id="grill", printer="hot", categories=["grill", "mains"]),)
        make = created_event
    with tempfile.TemporaryDirectory() as tmp:
        conn = connect_sync(Path(tmp) / "k.db")
        conn.execute("PRAGMA synchronous=NORMAL")
        pipeline = Pipeline("kitchen/bench", Applier(Plan(stations, "grill")))
        now = datetime.now(UTC)
        messages = [make("bench", i)[:2] for i in range(args.orders)]

        cpu0 = time.process_time()
        for start in range(0, len(messages), CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            pipeline.accept_batch(Tx(conn), [Incoming(t, p) for t, p in
                                             messages[start:start + CHUNK]], now)
            conn.execute("COMMIT")
        cpu1 = time.process_time()

        profile = cProfile.Profile() if args.profile else None
        if profile is not None:
            profile.enable()
        applied = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            done = pipeline.apply_pending(Tx(conn), now, limit=CHUNK)
            conn.execute("COMMIT")
            applied += len(done.outcomes)
            if len(done.outcomes) < CHUNK:
                break
        cpu2 = time.process_time()
        if profile is not None:
            profile.disable()
        jobs = conn.execute("SELECT COUNT(*) FROM print_jobs").fetchone()[0]
        records = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        conn.close()

    print(f"orders {args.orders}{' (kitchen)' if args.kitchen else ''}: "
          f"accept {(cpu1 - cpu0) / args.orders * 1e3:.3f} ms CPU/order, "
          f"apply {(cpu2 - cpu1) / max(1, applied) * 1e3:.3f} ms CPU/order "
          f"({applied} applied, {jobs} jobs, {records} outbox records)")
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
