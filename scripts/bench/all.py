"""Every goal of issues 12 and 17 in one command, one table of ratios.

    .venv/bin/python scripts/bench/all.py [--quick] [--only latency,resources,ingest,drain]
        [--workdir DIR] [--json PATH]

Runs, one after the other, each in its own process (each starts and stops its own broker,
printers, fake upstream and daemon):

- latency.py --kitchen --marketplace-polling --screens 3: publish -> first ticket byte at
  20/s and 100/s in the issue 17 kitchen (upstream syncing, a marketplace connector polling,
  three kitchen screens open), vs the naive consumer; 300 orders at each rate, three rounds
  (median ratio).
- resources.py: CPU ms, KiB written and RSS per order in the same kitchen at 50/s, vs the
  naive consumer; 3,000 orders.
- ingest.py --modes offline --max-batch 64: a backlog taken in and applied, vs a bare
  aiomqtt consumer; 20,000 events, three runs (medians); the shipped max_batch.
- drain.py: the outbox drained to the fake upstream vs its own capacity; 50,000 records,
  three runs (median ratio).

About 6 minutes on a quiet 2-core machine, 10 on a loaded one (--quick: about 2). Every
ratio is measured side by side in the same bench run (the naive consumer, the bare consumer,
the fake upstream's own capacity); the machine is shared and noisy, so compare ratios, not
absolute figures, between runs. Each bench's full output goes to WORKDIR/NAME.out, its
figures to WORKDIR/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent


def benches(quick: bool) -> dict[str, list[str]]:
    if quick:
        return {
            "latency": ["latency.py", "--kitchen", "--rates", "20:5,100:2",
                        "--marketplace-polling", "--screens", "3"],
            "resources": ["resources.py", "--orders", "500", "--idle", "3"],
            "ingest": ["ingest.py", "--events", "5000", "--runs", "1", "--modes", "offline",
                       "--max-batch", "64", "--alt", ""],
            "drain": ["drain.py", "--records", "20000", "--orders", "4000"],
        }
    return {
        "latency": ["latency.py", "--kitchen", "--rates", "20:15,100:3", "--rounds", "3",
                    "--marketplace-polling", "--screens", "3"],
        "resources": ["resources.py", "--orders", "3000", "--rate", "50"],
        # The daemon's shipped mqtt.max_batch (64), not ingest.py's own default (256).
        "ingest": ["ingest.py", "--events", "20000", "--runs", "3", "--modes", "offline",
                   "--max-batch", "64", "--alt", ""],
        "drain": ["drain.py", "--records", "50000", "--orders", "10000"],
    }


# Benches run more than once; their rows take the median ratio.
REPEAT = {"drain": 3}


# The bench running now; a signal to all.py is passed on to it, and it stops what it started.
RUNNING: list[subprocess.Popen[bytes]] = []
STOPPING: list[int] = []


def _pass_on(signum: int, _frame: Any) -> None:
    STOPPING.append(signum)
    for proc in RUNNING:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)


def run_bench(name: str, argv: list[str], workdir: Path) -> dict[str, Any] | None:
    out_path, json_path = workdir / f"{name}.out", workdir / f"{name}.json"
    began = time.monotonic()
    print(f"== {name}: {' '.join(argv)}", flush=True)
    if STOPPING:
        return None
    with out_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(HERE / argv[0]), *argv[1:],
                                 "--json", str(json_path)],
                                stdout=out, stderr=subprocess.STDOUT)
        RUNNING[:] = [proc]
        try:
            proc.wait()
        finally:
            RUNNING.clear()
    took = time.monotonic() - began
    if proc.returncode != 0 or not json_path.exists():
        tail = out_path.read_text(errors="replace").splitlines()[-15:]
        print(f"   {name} FAILED (exit {proc.returncode}) after {took:.0f}s:\n   "
              + "\n   ".join(tail), flush=True)
        return None
    print(f"   done in {took:.0f}s (output: {out_path})", flush=True)
    result: dict[str, Any] = json.loads(json_path.read_text())
    result["bench_s"] = took
    return result


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def goal_rows(results: dict[str, dict[str, Any] | None]) -> list[list[str]]:
    """goal, target, measured, baseline, ratio, met?"""
    rows: list[list[str]] = []

    def row(goal: str, target: str, measured: str, baseline: str, ratio: str,
            met: bool | None) -> None:
        rows.append([goal, target, measured, baseline, ratio,
                     "-" if met is None else ("yes" if met else "NO")])

    lat = results.get("latency")
    if "latency" not in results:
        pass
    elif lat is None:
        row("latency (issue 17)", "p50, p99 <= 2x naive", "failed / not run", "-", "-", None)
    else:
        for rate, _ in lat["rates"]:
            ds = [r for r in lat["results"] if r["who"] == "daemon" and r["rate"] == rate]
            ns = [r for r in lat["results"] if r["who"] == "naive" and r["rate"] == rate]
            printed = sum(r["printed"] for r in ds)
            expected = sum(r["tickets_expected"] for r in ds)
            for q in ("p50", "p99"):
                # Each round's daemon phase against the naive phase just before it.
                ratios = [d["ms"][q] / n["ms"][q] for d, n in zip(ds, ns, strict=True)]
                ratio = median(ratios)
                rounds = f" ({', '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ""
                row(f"publish -> first byte {q}, {rate:g}/s ({len(ds)} x {ds[0]['sent']} "
                    f"orders, {printed}/{expected} tickets)", "<= 2x naive",
                    f"{median(d['ms'][q] for d in ds):.1f} ms",
                    f"{median(n['ms'][q] for n in ns):.1f} ms (naive)",
                    f"{ratio:.2f}x{rounds}", ratio <= 2)
        for rate, _ in lat["rates"]:
            ds = [r for r in lat["results"] if r["who"] == "daemon" and r["rate"] == rate]
            ns = [r for r in lat["results"] if r["who"] == "naive" and r["rate"] == rate]
            cpu_d = median(r["cpu_ms_per_order"] for r in ds)
            cpu_n = median(r["cpu_ms_per_order"] for r in ns)
            row(f"CPU per order during the {rate:g}/s latency runs (publish to last ticket)",
                "<= 3 ms", f"{cpu_d:.2f} ms", f"{cpu_n:.2f} ms (naive)",
                f"{cpu_d / cpu_n:.1f}x", cpu_d <= 3)
    res = results.get("resources")
    if "resources" not in results:
        pass
    elif res is None:
        row("resources (issues 12, 17)", "-", "failed / not run", "-", "-", None)
    else:
        d, n = res["per_order"]["daemon"], res["per_order"]["naive"]
        behind = "" if res.get("kept_up", True) else " NOT KEPT UP"
        row(f"CPU per order, issue 17 mix ({res['orders']:,} orders at {res['rate']:g}/s)"
            + behind,
            "<= 3 ms", f"{d['cpu_ms_per_order']:.2f} ms", f"{n['cpu_ms_per_order']:.2f} ms "
            "(naive)", f"{d['cpu_ms_per_order'] / n['cpu_ms_per_order']:.1f}x",
            d["cpu_ms_per_order"] <= 3)
        row("storage written per order (write_bytes)", "<= 32 KiB",
            f"{d['write_kib_per_order']:.1f} KiB", f"{n['write_kib_per_order']:.1f} KiB "
            "(naive)", "-", d["write_kib_per_order"] <= 32)
        row("  SQLite files' growth per order / log per order", "-",
            f"{d['sqlite_kib_per_order']:.1f} / {d['log_kib_per_order']:.1f} KiB", "-", "-",
            None)
        row(f"RSS, max over the run ({res['orders']:,} orders)", "<= 80 MB",
            f"{d['rss_mb_max']:.1f} MB", f"{n['rss_mb_max']:.1f} MB (naive)",
            f"{d['rss_mb_max'] / n['rss_mb_max']:.1f}x", d["rss_mb_max"] <= 80)
        first = res["checkpoints"][0]["daemon"]["rss_kib"] / 1024
        row("RSS growth, first to last tenth of the run (flat: the 100,000-order run)",
            "flat", f"{d['rss_mb_end'] - first:+.1f} MB", "-", "-", None)
    ing = results.get("ingest")
    if "ingest" not in results:
        pass
    elif ing is None:
        row("backlog applied", ">= 2,000 orders/s", "failed / not run", "-", "-", None)
    else:
        s = ing["series"][0]
        applied = s.get("daemon_applied")
        row(f"backlog applied ({ing['events']:,} queued orders, offline printer)",
            ">= 2,000 orders/s", f"{_f(applied, ',.0f')}/s",
            f"{s['bare']:,.0f}/s (bare aiomqtt, received)",
            f"{applied / s['bare']:.2f}x" if applied else "-",
            applied is not None and applied >= 2000)
        row(f"  backlog durable and acknowledged (intake), {s['n']} run(s), medians", "-",
            f"{s['daemon_connect']:,.0f}/s", f"{s['bare']:,.0f}/s", f"{s['ratio']:.2f}x", None)
    dr = results.get("drain")
    if "drain" not in results:
        pass
    elif dr is None:
        row("upstream drain", ">= 0.8x fake capacity", "failed / not run", "-", "-", None)
    else:
        runs = dr.get("runs", [dr])
        sent = median(r["records_per_s_sending"] for r in runs)
        for key, label in (("fake_capacity_1_in_flight", "1 in flight"),
                           ("fake_capacity_4_in_flight", "4 in flight")):
            # Each run's sender against the capacity measured just before it.
            ratios = [r["records_per_s_sending"] / r[key] for r in runs]
            ratio = median(ratios)
            each = f" ({', '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ""
            goal = (f"upstream drain ({runs[0]['records']:,} records waiting, {len(runs)} runs)"
                    if label == "1 in flight" else "  the same, against 4 requests in flight")
            row(goal, ">= 0.8x capacity", f"{sent:,.0f} rec/s",
                f"{median(r[key] for r in runs):,.0f} rec/s (bare httpx, {label})",
                f"{ratio:.2f}x{each}", ratio >= 0.8)
    return rows


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", default="", help="comma list of benches to run")
    parser.add_argument("--workdir", help="keep the benches' output here (default: a temp dir)")
    parser.add_argument("--json", metavar="PATH", help="also write every bench's figures")
    args = parser.parse_args()
    plan = benches(args.quick)
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        unknown = wanted - set(plan)
        if unknown:
            parser.error(f"--only: unknown bench(es) {', '.join(sorted(unknown))}")
        plan = {k: v for k, v in plan.items() if k in wanted}
    signal.signal(signal.SIGTERM, _pass_on)
    signal.signal(signal.SIGINT, _pass_on)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {}
        for name, argv in plan.items():
            if REPEAT.get(name, 1) == 1:
                results[name] = run_bench(name, argv, workdir)
                continue
            runs = [run_bench(f"{name}-{k}", argv, workdir)
                    for k in range(1, REPEAT[name] + 1)]
            results[name] = ({"runs": runs} if all(r is not None for r in runs) else None)
    wall = time.monotonic() - started
    print()
    print(f"issues 12 and 17, every goal; wall time {wall / 60:.1f} min; ratios are from the "
          "same bench run, on a shared, noisy 2-core machine")
    print()
    print(markdown(["goal", "target", "measured", "baseline", "ratio", "met?"],
                   goal_rows(results)))
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_s": wall, "results": results}, indent=1))
    return 0 if all(r is not None for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
