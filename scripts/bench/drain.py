"""Drain benchmark: a long WAN outage leaves 50,000 records in the outbox; the upstream
comes back. How fast does the sender empty it, next to what the upstream itself can take?

    .venv/bin/python scripts/bench/drain.py [--records 50000] [--orders 10000]

Everything is real: the outbox is a SQLite file (WAL, synchronous=FULL, as in the daemon),
the fake upstream runs in its own process on loopback, and the sender is the daemon's.
The upstream's capacity is measured in the same run by a bare httpx client posting the same
requests the sender makes: the records' own wire text, read from the same outbox (ids and
order ids prefixed, so the fake takes them as new), in batches of the sender's size, through
one persistent client, one request in flight. It is measured just before the drain and just
after it, and the baseline is the mean of the two (the machine's load moves within a run);
then four requests at once, for comparison. CPU (user + system) of the bench's process (the
sender, or the bare client) and of the fake is read around each phase and reported per
500 records. The sender keeps up to two requests in flight; the fake reports the most it
saw at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
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


def cpu_self() -> float:
    """CPU seconds (user + system) of this process, every thread."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def capacity_bodies(db_path: Path, batch_records: int, tag: str) -> list[bytes]:
    """The sender's requests, made by a bare client: every record's wire text as the sender
    sends it (the same SQL builds it), ids and order ids prefixed with `tag` so the fake
    takes them as new records of other orders, in batches of the sender's size."""
    conn = connect_sync(db_path)
    try:
        rows = [str(r[0]) for r in conn.execute(
            "SELECT '{\"record_id\":' || json_quote(? || record_id) || ',\"kind\":'"
            " || json_quote(kind) || ',\"order_id\":' || json_quote(? || order_id)"
            " || ',\"seq\":' || seq || ',\"created_at\":' || json_quote(created_at)"
            " || ',\"body\":' || body || '}' FROM outbox WHERE state = 'pending' ORDER BY seq",
            (tag, tag))]
    finally:
        conn.close()
    return [("{\"records\":[" + ",".join(rows[i:i + batch_records]) + "]}").encode()
            for i in range(0, len(rows), batch_records)]


async def capacity(info: dict[str, Any], bodies: list[bytes], parallel: int,
                   fake_pid: int) -> dict[str, float]:
    """records/s a bare client gets through the fake with `bodies`, `parallel` requests out
    at once on one persistent client; and the CPU both sides spent per 500 records."""
    url = f"{info['url']}/v1/sites/bench/records"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
               "User-Agent": "kitchen-edge"}
    queue = list(reversed(bodies))
    records = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal records
        while queue:
            body = queue.pop()
            r = await client.post(url, content=body, headers=headers)
            assert r.status_code == 200
            records += len(r.json()["accepted"])

    async with httpx.AsyncClient(timeout=30) as client:
        # One request first: the connection is open and warm, as the sender's is by the
        # time it is draining.
        r = await client.post(url, content=b'{"records":[]}', headers=headers)
        r.raise_for_status()
        cpu0, fake0, start = cpu_self(), cpu_of(fake_pid), time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(parallel)))
        elapsed = time.perf_counter() - start
        cpu1, fake1 = cpu_self(), cpu_of(fake_pid)
    per = 500 / records * 1000
    return {"records_per_s": records / elapsed, "client_cpu_ms_per_500": (cpu1 - cpu0) * per,
            "fake_cpu_ms_per_500": (fake1 - fake0) * per}


async def drain(db_path: Path, info: dict[str, Any], workdir: Path, records: int,
                cfg: UpstreamConfig, fake_pid: int) -> dict[str, Any]:
    store = Store(db_path)
    await store.open()
    wan: list[tuple[float, bool]] = []
    wan_down = asyncio.Event()

    def on_wan(up: bool) -> None:
        wan.append((time.perf_counter(), up))
        if not up:
            wan_down.set()

    sender = Sender(store, cfg, "bench", on_wan_change=on_wan, backoff_base=0.1,
                    poll_interval=1.0, housekeeping_interval=3600)
    requests_before = await fake_requests(info)
    await control(info, "down")
    task = asyncio.create_task(sender.run())
    await wan_down.wait()
    await control(info, "none")
    t_up = time.perf_counter()
    t_first = None
    cpu0 = fake0 = 0.0
    first = 0
    while True:
        if t_first is None and sender.records_accepted:
            t_first = time.perf_counter()
            cpu0, fake0 = cpu_self(), cpu_of(fake_pid)
            first = sender.records_accepted
        if sender.records_accepted >= records:
            break
        # The sender shares this event loop: a tighter poll would bill the bench's own
        # wake-ups to it (the bare client has none). 20 ms is 0.2-0.4% of a drain.
        await asyncio.sleep(0.02)
    t_done = time.perf_counter()
    per = 500 / (records - first) * 1000
    cpu_ms = (cpu_self() - cpu0) * per
    fake_ms = (cpu_of(fake_pid) - fake0) * per
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
        "sender_cpu_ms_per_500": cpu_ms,
        "fake_cpu_ms_per_500_draining": fake_ms,
    }


async def main_async(records: int, orders: int, batch_records: int | None,
                     backlog: Path | None) -> dict[str, Any]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory(prefix="drain-") as tmp:
        workdir = Path(tmp)
        db_path = workdir / "kitchen-edge.db"
        if backlog is not None and backlog.exists():  # noqa: ASYNC240 (before any task)
            shutil.copyfile(backlog, db_path)
            fill_s = 0.0
        else:
            fill_s = fill(db_path, records, orders)
            if backlog is not None:
                shutil.copyfile(db_path, backlog)
        proc, info = start_fake(workdir)
        extra = {} if batch_records is None else {"batch_records": batch_records}
        cfg = UpstreamConfig(url=info["url"], token_file=workdir / "upstream.token", timeout=10,
                             backoff_max=2.0, **extra)
        try:
            cap_before = await capacity(
                info, capacity_bodies(db_path, cfg.batch_records, "cap1-"), 1, proc.pid)
            cap_after_bodies = capacity_bodies(db_path, cfg.batch_records, "cap2-")
            cap_4_bodies = capacity_bodies(db_path, cfg.batch_records, "cap4-")
            result = await drain(db_path, info, workdir, records, cfg, proc.pid)
            # Read before the capacity runs after it: how many requests the sender had
            # out at once.
            result["sender_most_at_once"] = int((await fake_state(info))["most_at_once"])
            cap_after = await capacity(info, cap_after_bodies, 1, proc.pid)
            cap_4 = await capacity(info, cap_4_bodies, 4, proc.pid)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        db_mb = db_path.stat().st_size / 1e6
    cap_1 = (cap_before["records_per_s"] + cap_after["records_per_s"]) / 2
    return {"records": records, "orders": orders, "fill_s": fill_s, "db_mb": db_mb,
            "batch_records": cfg.batch_records,
            "fake_capacity_1_in_flight": cap_1,
            "fake_capacity_1_before": cap_before["records_per_s"],
            "fake_capacity_1_after": cap_after["records_per_s"],
            "fake_capacity_4_in_flight": cap_4["records_per_s"],
            "bare_client_cpu_ms_per_500": (cap_before["client_cpu_ms_per_500"]
                                           + cap_after["client_cpu_ms_per_500"]) / 2,
            "fake_cpu_ms_per_500_bare": (cap_before["fake_cpu_ms_per_500"]
                                         + cap_after["fake_cpu_ms_per_500"]) / 2,
            "ratio": result["records_per_s_sending"] / cap_1, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--batch-records", type=int, default=None,
                        help="upstream.batch_records for the sender and the bare client "
                             "(default: the configuration's default)")
    parser.add_argument("--backlog", type=Path, metavar="FILE",
                        help="keep the filled outbox in FILE and start from a copy of it next "
                             "time (same --records and --orders; the fill is deterministic)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    r = asyncio.run(main_async(args.records, args.orders, args.batch_records, args.backlog))
    print(f"backlog: {r['records']} records of {r['orders']} orders "
          f"({r['db_mb']:.1f} MB file, written in {r['fill_s']:.1f}s)")
    b = r["batch_records"]
    print(f"fake upstream capacity, bare httpx, the sender's records in {b}-record batches,"
          f" 1 in flight: {r['fake_capacity_1_in_flight']:,.0f} records/s (before the drain "
          f"{r['fake_capacity_1_before']:,.0f}, after {r['fake_capacity_1_after']:,.0f}); "
          f"CPU per 500 records: client {r['bare_client_cpu_ms_per_500']:.1f} ms, "
          f"fake {r['fake_cpu_ms_per_500_bare']:.1f} ms")
    print(f"fake upstream capacity, bare httpx, {b}-record batches, 4 in flight: "
          f"{r['fake_capacity_4_in_flight']:,.0f} records/s")
    print(f"sender drain: {r['records_per_s_sending']:,.0f} records/s while sending, "
          f"{r['records_per_s_from_up']:,.0f} records/s counting the "
          f"{r['reconnect_s']:.2f}s to notice the upstream was back; "
          f"{r['requests']} requests, at most {r['sender_most_at_once']} at once; "
          f"{r['left_unaccepted']} left unaccepted; CPU per 500 records: sender "
          f"{r['sender_cpu_ms_per_500']:.1f} ms, fake {r['fake_cpu_ms_per_500_draining']:.1f} ms")
    print(f"ratio to the fake's capacity (1 in flight, mean of before and after): "
          f"{r['ratio']:.2f}")
    print(json.dumps(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
