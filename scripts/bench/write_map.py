"""Where the daemon's storage writes go, from `resources.py --strace-calls` (issue 12).

```
.venv/bin/python scripts/bench/write_map.py WORKDIR [--orders N]
```

Reads WORKDIR/strace-calls.txt (every pwrite64, fsync, fdatasync and ftruncate of the
daemon, with file names and the first bytes written) and the database the run left in
WORKDIR, and prints:

* what `write_bytes` in /proc/PID/io counts, modelled: the kernel counts 4 KiB for each page
  of the page cache that goes from clean to dirty; an fsync/fdatasync of a file cleans its
  pages. Split into the WAL's new pages, the WAL's pages dirtied again after a sync (a commit
  that starts in the 4 KiB page the previous durable commit ended in, or the WAL written from
  its start again after a checkpoint), and the database file (checkpoint copies).
* WAL frames and commits per order, and the frames per b-tree (pages mapped to their
  b-tree with `dbstat` on the database as it is at the end).
"""

from __future__ import annotations

import argparse
import collections
import re
import sqlite3
import sys
from pathlib import Path

OS_PAGE = 4096
_CALL = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(pwrite64|fsync|fdatasync|ftruncate)\((\d+)<([^>]*)>"
                   r"(.*)$")
_PWRITE_ARGS = re.compile(r'^, "((?:\\x[0-9a-f]{2})*)"(?:\.\.\.)?, (\d+), (\d+)\)')


def decoded(path: str) -> str:
    """strace -xx writes the file name in hex too."""
    if "\\x" not in path:
        return path
    return bytes(int(h, 16) for h in path.split("\\x")[1:]).decode(errors="replace")


def kind_of(path: str) -> str:
    if path.endswith("-wal"):
        return "wal"
    if path.endswith("-shm"):
        return "shm"
    if path.endswith(".db"):
        return "db"
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--orders", type=int, default=0,
                        help="orders in the traced window (default: outbox confirmations)")
    args = parser.parse_args()
    trace = args.workdir / "strace-calls.txt"
    dbs = list(args.workdir.rglob("kitchen-edge.db"))
    if not dbs:
        print(f"no kitchen-edge.db under {args.workdir}", file=sys.stderr)
        return 1
    db = dbs[0]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    owner: dict[int, str] = {}
    try:
        for name, pageno in conn.execute("SELECT name, pageno FROM dbstat"):
            owner[int(pageno)] = str(name)
    except sqlite3.OperationalError as exc:
        print(f"(no dbstat here: {exc}; frames by page number only)", file=sys.stderr)

    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]):
        # Pointer-map pages (incremental vacuum): page 2, then one every usable/5 + 1 pages.
        usable = page_size - int(conn.execute("PRAGMA page_size").fetchone()[0] and 0)
        step = usable // 5 + 1
        last = int(conn.execute("PRAGMA page_count").fetchone()[0]) + 100_000
        for pgno in range(2, last, step):
            owner[pgno] = "pointer map"
    dirty: dict[str, set[int]] = collections.defaultdict(set)   # file -> dirty 4 KiB pages
    seen: dict[str, set[int]] = collections.defaultdict(set)    # ... ever dirtied
    counted: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    commits = 0
    syncs: collections.Counter[str] = collections.Counter()
    db_pages: collections.Counter[str] = collections.Counter()
    n_frames = 0
    for line in trace.read_text(errors="replace").splitlines():
        m = _CALL.match(line)
        if m is None:
            continue
        _pid, call, _fd, path, rest = m.groups()
        path = decoded(path)
        kind = kind_of(path)
        if call in ("fsync", "fdatasync"):
            syncs[kind] += 1
            dirty[path].clear()
            continue
        if call == "ftruncate":
            dirty[path].clear()
            seen[path].clear()
            continue
        a = _PWRITE_ARGS.match(rest)
        if a is None:
            continue
        head = bytes(int(h, 16) for h in a.group(1).split("\\x")[1:])
        length, offset = int(a.group(2)), int(a.group(3))
        for page in range(offset // OS_PAGE, (offset + length - 1) // OS_PAGE + 1):
            if page not in dirty[path]:
                again = page in seen[path]
                counted[f"{kind} {'again' if again else 'new'}"] += OS_PAGE
                dirty[path].add(page)
                seen[path].add(page)
        if kind == "wal" and length == 24 and len(head) >= 8:
            pgno = int.from_bytes(head[:4], "big")
            n_frames += 1
            frames[owner.get(pgno, f"page {pgno} (now free or new)")
                   if pgno != 1 else "page 1"] += 1
            if int.from_bytes(head[4:8], "big"):
                commits += 1
        elif kind == "db":
            pgno = offset // page_size + 1
            db_pages[owner.get(pgno, "?") if pgno != 1 else "page 1"] += length // page_size

    orders = args.orders
    if not orders:
        orders = int(conn.execute(
            "SELECT COUNT(*) FROM orders WHERE order_id LIKE 'r%'").fetchone()[0]) or 1
    total = sum(counted.values())
    print(f"{orders} orders; page size {page_size}; modelled write_bytes "
          f"{total / 1024 / orders:.1f} KiB/order")
    for key, value in sorted(counted.items()):
        print(f"  {key:<12} {value / 1024 / orders:8.1f} KiB/order")
    print(f"WAL: {n_frames / orders:.1f} frames, {commits / orders:.2f} commits per order; "
          "syncs per order: " + ", ".join(f"{k} {v / orders:.2f}" for k, v in syncs.items()))
    print("WAL frames per order by b-tree:")
    for name, n in frames.most_common(25):
        print(f"  {name:<32} {n / orders:6.2f}")
    print("checkpoint: database pages copied per order by b-tree:")
    for name, n in db_pages.most_common(15):
        print(f"  {name:<32} {n / orders:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
