"""Summarise a py-spy raw profile (`py-spy record --format raw`) of the daemon.

    .venv/bin/python scripts/bench/spy_summary.py PROFILE.txt [--top 20] [--thread NAME]
        [--rev COMMIT]

Prints, as Markdown tables:
- per thread (with `--threads` profiles): samples and how many of them were busy (not
  waiting in epoll, for a queue item or for a worker's job). The daemon's aiosqlite threads
  are `Thread-1` (the writer, opened first) and `Thread-2` (the reader);
- what the busy samples were doing, one category per sample (the first that matches, in
  the order listed): the SQLite COMMIT (with synchronous=FULL, the fsync), BEGIN and the
  synchronous switch, logging, timeline rebuilds, JSON, SQL statements (the leaf is a line
  of ours that calls execute/fetch), MQTT, ticket rendering, printer I/O, upstream HTTP,
  asyncio and sockets, other code of ours, the rest;
- the busy samples' top leaf frames (self time, with their caller) and top functions of
  edge/ (inclusive).

Profiles taken with `--gil` hold only samples of the thread that held the GIL: Python CPU.
Profiles taken with `--idle --threads` hold every thread at every sample: wall time, where
a thread blocked in a system call (an fsync, a send) shows as that call's Python line, and a
thread waiting for the GIL shows as the line it waits on.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+):(?P<line>\d+)\)$")

# Leaves where a thread waits for work: not busy.
IDLE_LEAVES = (
    re.compile(r"^EpollSelector\.select \(selectors\.py"),
    re.compile(r"^_worker \(concurrent/futures/thread\.py"),
    re.compile(r"^_connection_worker_thread \(aiosqlite/core\.py:59\)"),
    re.compile(r"^Condition\.wait \(threading\.py"),
    re.compile(r"^Event\.wait \(threading\.py"),
)


# The commit the profile was recorded on (--rev): its line numbers are that commit's.
REV: list[str] = []


@cache
def _source(file: str) -> list[str]:
    if REV:
        shown = subprocess.run(["git", "show", f"{REV[0]}:{file}"], cwd=ROOT,
                               capture_output=True, check=False)
        return shown.stdout.decode(errors="replace").splitlines() if shown.returncode == 0 else []
    path = ROOT / file
    return path.read_text(errors="replace").splitlines() if path.exists() else []


@cache
def source_line(file: str, line: int) -> str:
    lines = _source(file)
    # A multi-line call may be reported at one of its argument lines: look a little up too.
    return "\n".join(lines[max(0, line - 4):line])


def _db_line(frame: str, text: str) -> bool:
    m = FRAME.match(frame)
    return bool(m and m["file"] == "edge/store/db.py" and text in source_line(m["file"],
                                                                             int(m["line"])))


def _sql_leaf(frame: str) -> bool:
    m = FRAME.match(frame)
    if not m or not m["file"].startswith("edge/"):
        return False
    src = source_line(m["file"], int(m["line"])).splitlines()[-1:]
    return bool(src) and bool(re.search(r"\.(execute|executemany|fetchone|fetchall)\(|"
                                        r"conn\.execute|c\.execute", src[0]))


def _any(frames: list[str], pattern: str) -> bool:
    rx = re.compile(pattern)
    return any(rx.search(f) for f in frames)


def category(frames: list[str]) -> str:
    leaf = frames[-1]
    if _db_line(leaf, 'execute("COMMIT")'):
        return "SQLite COMMIT (fsync when durable)"
    if _db_line(leaf, "BEGIN") or _db_line(leaf, "PRAGMA synchronous") or _db_line(
            leaf, "ROLLBACK"):
        return "SQLite BEGIN / ROLLBACK / synchronous switch"
    if _any(frames, r"\((structlog/|logging/|edge/log\.py)"):
        return "logging (structlog)"
    if _any(frames, r"^build_timeline "):
        return "timeline rebuild"
    if _any(frames, r"\(json/"):
        return "JSON encode/decode"
    if _sql_leaf(leaf):
        return "SQL statements (execute/fetch)"
    if _any(frames, r"\((paho/|aiomqtt/|edge/ingest/link\.py)"):
        return "MQTT (paho, aiomqtt, link)"
    if _any(frames, r"\(edge/printing/(render|layout|codepages|raster|ticket)\.py"):
        return "ticket rendering"
    if _any(frames, r"\(edge/printing/(transport|status|usb)\.py"):
        return "printer I/O"
    if _any(frames, r"\((httpx/|httpcore/|h11/|edge/upstream/sender\.py)"):
        return "upstream HTTP (httpx)"
    if _any(frames, r"\((aiohttp/|edge/http\.py)"):
        return "HTTP listener (aiohttp)"
    if re.search(r"\((asyncio/|selectors\.py|socket\.py)", leaf):
        return "asyncio, sockets"
    if re.search(r"\(edge/", leaf):
        return "other Python of ours"
    return "other (libraries, interpreter)"


def load(path: Path, thread: str | None) -> list[tuple[str, list[str], int]]:
    samples = []
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        name = "all"
        if frames and frames[0].startswith(("thread (", "process ")):
            head = frames.pop(0)
            name = head.split(": ", 1)[1] if ": " in head else head
        if thread is not None and thread not in name:
            continue
        if frames:
            samples.append((name, frames, int(count)))
    return samples


def idle(frames: list[str]) -> bool:
    return any(rx.match(frames[-1]) for rx in IDLE_LEAVES)


def pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def summarise(path: Path, top: int, thread: str | None) -> str:
    samples = load(path, thread)
    out: list[str] = [f"### {path.name}", ""]
    per_thread: Counter[str] = Counter()
    busy_thread: Counter[str] = Counter()
    for name, frames, n in samples:
        per_thread[name] += n
        if not idle(frames):
            busy_thread[name] += n
    total = sum(per_thread.values())
    out += ["| thread | samples | busy | busy share |", "|---|---|---|---|"]
    for name, n in per_thread.most_common():
        out.append(f"| {name} | {n} | {busy_thread[name]} | {pct(busy_thread[name], n)} |")
    busy = [(name, frames, n) for name, frames, n in samples if not idle(frames)]
    busy_total = sum(n for _, _, n in busy)
    cats: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    for name, frames, n in busy:
        cats[category(frames)] += n
        # The caller too: a leaf in a shared helper (a query wrapper) says little alone.
        caller = f" <- {frames[-2]}" if len(frames) > 1 else ""
        leaves[f"{frames[-1]}{caller} [{name}]"] += n
        seen = set()
        for frame in frames:
            m = FRAME.match(frame)
            if (m and m["file"].startswith("edge/") and m["func"] not in seen
                    and m["file"] != "edge/__main__.py" and m["file"] != "edge/cli.py"
                    and not m["file"].startswith("edge/cli/")
                    and m["func"] != "run_daemon"):
                seen.add(m["func"])
                funcs[f"{m['func']} ({m['file']})"] += n
    out += ["", f"Busy samples: {busy_total} of {total}.", "",
            "| what the busy samples were doing | samples | share of busy |", "|---|---|---|"]
    for cat, n in cats.most_common():
        out.append(f"| {cat} | {n} | {pct(n, busy_total)} |")
    out += ["", "| top leaf frames (self) <- caller [thread] | samples | share of busy |",
            "|---|---|---|"]
    for leaf, n in leaves.most_common(top):
        out.append(f"| `{leaf}` | {n} | {pct(n, busy_total)} |")
    out += ["", "| top functions of edge/ (inclusive) | samples | share of busy |",
            "|---|---|---|"]
    for func, n in funcs.most_common(top):
        out.append(f"| `{func}` | {n} | {pct(n, busy_total)} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--thread", help="only threads whose name holds this")
    parser.add_argument("--rev", help="the git commit the profile was recorded on (default: "
                                      "the files as they are now); the categories read the "
                                      "source lines the samples name")
    args = parser.parse_args()
    if args.rev:
        REV.append(args.rev)
    print("\n\n".join(summarise(p, args.top, args.thread) for p in args.profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
