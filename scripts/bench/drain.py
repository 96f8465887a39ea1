"""Drain benchmark: a long WAN outage leaves 50,000 records in the outbox; the upstream
comes back. How fast does the sender empty it, next to what the upstream itself can take?

    .venv/bin/python scripts/bench/drain.py [--records 50000] [--orders 10000]

Everything is real: the outbox is a SQLite file (WAL, synchronous=FULL, as in the daemon),
the fake upstream runs in its own process on loopback, and the sender is the daemon's.
The upstream's capacity is measured in the same run by a bare httpx client posting
pre-built 500-record batches (one request in flight; then, after the drain, four at once).
The sender keeps up to two requests in flight; the fake reports the most it saw at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge.config.models import UpstreamConfig  # noqa: E402
from edge.store import outbox  # noqa: E402
from edge.store.db import Store, connect_sync  # noqa: E402
from edge.upstream.sender import Sender  # noqa: E402

TOKEN = "bench-token"
KINDS = ("confirmation", "print_job", "print_job", "print_job", "status")
CONCURRENT_ORDERS = 300  # how many orders a busy kitchen has on the go at once


def body_for(kind: str, order_id: str, k: int) -> dict[str, Any]:
    if kind == "status":
        return {
            "order_id": order_id, "channel": "qr_menu", "read_only": True,
            "external_mutation": False, "last_status": "Confirmation recorded",
            "steps": [
                {"sequence": n, "key": key, "label": key.replace("_", " ").title(),
                 "customer_visible": True, "at": "2026-11-21T18:02:11Z",
                 "evidence": f"ev_{order_id}_{n}"}
                for n, key in enumerate(("order_accepted", "routed_to_core",
                                         "kitchen_ticket_created", "printer_job_created",
                                         "confirmation_outboxed"), start=1)
            ],
        }
    if kind == "confirmation":
        return {"order_id": order_id, "channel": "qr_menu", "display_id": order_id.upper(),
                "fulfillment": "dine_in", "first_job_key": f"kpj_{order_id}_initial_grill",
                "status": "Confirmation recorded"}
    return {"job_key": f"kpj_{order_id}_initial_st{k}", "station_id": f"st{k}", "kind": "NEW",
            "state": "printed", "printer_id": "hot-line", "backup_from": None,
            "may_be_duplicate": False, "created_at": "2026-11-21T18:02:11.300Z",
            "printed_at": "2026-11-21T18:02:12.100Z"}


def fill(db_path: Path, records: int, orders: int) -> float:
    """Write the outage's backlog, interleaved the way a kitchen writes it."""
    per_order = records // orders
    plan = sorted(
        ((o + k * CONCURRENT_ORDERS, o, k) for o in range(orders) for k in range(per_order)),
    )
    conn = connect_sync(db_path)
    start = time.perf_counter()
    t0 = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    conn.execute("BEGIN IMMEDIATE")
    for n, (_, o, k) in enumerate(plan):
        order_id = f"qr-{o:06d}"
        kind = KINDS[k % len(KINDS)]
        outbox.add_record(conn, kind=kind, record_id=f"{kind}:{order_id}:{k}",
                          order_id=order_id, body=body_for(kind, order_id, k),
                          created_at=t0 + timedelta(milliseconds=n))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def start_fake(workdir: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    token_file = workdir / "upstream.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.upstream.fake", "--token-file", str(token_file)],
        stdout=subprocess.PIPE, cwd=ROOT,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info


async def control(info: dict[str, Any], mode: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"http://127.0.0.1:{info['control_port']}/fault",
                              json={"mode": mode})
        r.raise_for_status()


async def fake_state(info: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{info['control_port']}/state")
        state: dict[str, Any] = r.raise_for_status().json()
        return state


async def fake_requests(info: dict[str, Any]) -> int:
    return int((await fake_state(info))["requests"])


async def capacity(info: dict[str, Any], batches: int, parallel: int, tag: str) -> float:
    """records/s a bare client gets through the fake, pre-built 500-record batches."""
    bodies = []
    for b in range(batches):
        records = [
            {"record_id": f"cap-{tag}-{b}-{i}", "kind": "print_job", "order_id": f"cap-{b}-{i}",
             "seq": b * 500 + i, "created_at": "2026-11-21T18:00:00.000Z",
             "body": body_for(KINDS[i % 5], f"cap-{b}-{i}", i % 5)}
            for i in range(500)
        ]
        bodies.append(json.dumps({"records": records}, separators=(",", ":")).encode())
    url = f"{info['url']}/v1/sites/bench/records"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    queue = list(reversed(bodies))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            r = await client.post(url, content=body, headers=headers)
            assert r.status_code == 200 and len(r.json()["accepted"]) == 500

    async with httpx.AsyncClient(timeout=30) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(parallel)))
        elapsed = time.perf_counter() - start
    return batches * 500 / elapsed


async def drain(db_path: Path, info: dict[str, Any], workdir: Path, records: int) -> dict[str, Any]:
    store = Store(db_path)
    await store.open()
    wan: list[tuple[float, bool]] = []
    wan_down = asyncio.Event()

    def on_wan(up: bool) -> None:
        wan.append((time.perf_counter(), up))
        if not up:
            wan_down.set()

    cfg = UpstreamConfig(url=info["url"], token_file=workdir / "upstream.token", timeout=10,
                         backoff_max=2.0)
    sender = Sender(store, cfg, "bench", on_wan_change=on_wan, backoff_base=0.1,
                    poll_interval=1.0, housekeeping_interval=3600)
    requests_before = await fake_requests(info)
    await control(info, "down")
    task = asyncio.create_task(sender.run())
    await wan_down.wait()
    await control(info, "none")
    t_up = time.perf_counter()
    t_first = None
    while True:
        if t_first is None and sender.records_accepted:
            t_first = time.perf_counter()
        if sender.records_accepted >= records:
            break
        await asyncio.sleep(0.005)
    t_done = time.perf_counter()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    left = await store.read(lambda c: c.execute(
        "SELECT COUNT(*) FROM outbox WHERE state != 'accepted'").fetchone()[0])
    await store.close()
    assert t_first is not None
    return {
        "from_up_s": t_done - t_up,
        "reconnect_s": t_first - t_up,
        "records_per_s_from_up": records / (t_done - t_up),
        "records_per_s_sending": records / (t_done - t_first),
        # Counted by the fake (the sender no longer counts them): every request it got,
        # including the ones refused while it was down.
        "requests": await fake_requests(info) - requests_before,
        "left_unaccepted": left,
    }


async def main_async(records: int, orders: int) -> dict[str, Any]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory(prefix="drain-") as tmp:
        workdir = Path(tmp)
        db_path = workdir / "kitchen-edge.db"
        fill_s = fill(db_path, records, orders)
        proc, info = start_fake(workdir)
        try:
            batches = records // 500
            cap_1 = await capacity(info, batches, 1, "seq")
            result = await drain(db_path, info, workdir, records)
            # Read before the 4-in-flight capacity run: how many requests the sender had
            # out at once.
            result["sender_most_at_once"] = int((await fake_state(info))["most_at_once"])
            cap_4 = await capacity(info, batches, 4, "par")
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        db_mb = db_path.stat().st_size / 1e6
    return {"records": records, "orders": orders, "fill_s": fill_s, "db_mb": db_mb,
            "fake_capacity_1_in_flight": cap_1, "fake_capacity_4_in_flight": cap_4, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    r = asyncio.run(main_async(args.records, args.orders))
    print(f"backlog: {r['records']} records of {r['orders']} orders "
          f"({r['db_mb']:.1f} MB file, written in {r['fill_s']:.1f}s)")
    print(f"fake upstream capacity, bare httpx, 500-record batches, 1 in flight: "
          f"{r['fake_capacity_1_in_flight']:,.0f} records/s")
    print(f"fake upstream capacity, bare httpx, 500-record batches, 4 in flight: "
          f"{r['fake_capacity_4_in_flight']:,.0f} records/s")
    print(f"sender drain: {r['records_per_s_sending']:,.0f} records/s while sending, "
          f"{r['records_per_s_from_up']:,.0f} records/s counting the "
          f"{r['reconnect_s']:.2f}s to notice the upstream was back; "
          f"{r['requests']} requests, at most {r['sender_most_at_once']} at once; "
          f"{r['left_unaccepted']} left unaccepted")
    print(json.dumps(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
