"""What a dead printer costs, and how soon a printer back from a fault is noticed.

For each way a printer can be dead (powered off: connection refused; dropping every
connection; hung: accepts, never answers) the daemon runs with that printer dead for
`--dead` seconds, and the benchmark reports:
- connections the printer accepted per second after the first 10 s (the backoff at its cap);
- the daemon's CPU time per second while the printer is dead (from /proc/PID/stat);
- `printer_state` log lines (one per state change, not one per attempt).

Then, for paper out (the printer answers: "not ready") and power off, the time from the
printer coming back to the daemon saying `online` on the printer's state topic, with and
without Automatic Status Back (`printers[].status_back`), side by side in one run.

    .venv/bin/python scripts/bench/printer_faults.py [--dead 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Broker, DaemonRun, VPrinterProc, table

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def config(path: Path, broker: int, printer: str, *, status_back: bool) -> Path:
    cfg: dict[str, Any] = {
        "site": "bench-faults", "state_dir": str(path.parent / "state"),
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker}", "client_id": f"bench-{path.stem}"},
        "printers": [{"id": "hot", "connection": printer, "status_back": status_back}],
        "stations": [{"id": "grill", "printer": "hot", "categories": ["grill"]}],
        "routing": {"default_station": "grill"},
        "discovery": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


class StateWatch:
    """The printer's retained state topic, with the time each state arrived."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.seen: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{time.time()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("kitchen/bench-faults/printers/hot/state", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._changed:
            self.seen.append((time.monotonic(), json.loads(msg.payload)["state"]))
            self._changed.notify_all()

    def wait(self, state: str, after: float, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, seen in self.seen:
                    if at >= after and seen == state:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {state} within {timeout}s")
                self._changed.wait(left)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def dead_run(work: Path, broker: Broker, how: str, seconds: float) -> list[object]:
    printer = VPrinterProc(work / f"printer-{how}", png=False).start()
    run = DaemonRun(config(work / f"{how}.yaml", broker.port, printer.address, status_back=False),
                    work / f"{how}.log")
    try:
        run.start()
        assert run.proc is not None
        time.sleep(1.0)
        began = time.monotonic()
        wall = time.time()
        if how == "powered off":
            printer.set_state("offline")
        else:
            printer.set_mode(how)
        cpu0 = cpu_seconds(run.proc.pid)
        time.sleep(seconds)
        cpu = cpu_seconds(run.proc.pid) - cpu0
        elapsed = time.monotonic() - began
        if how == "powered off":
            late = "refused"
        else:
            accepted = [c for c in printer.connections() if c["accepted_at"] >= wall + 10]
            late = f"{len(accepted) / (elapsed - 10):.2f}"
        lines = sum(1 for x in run.log_lines() if x.get("event") == "printer_state")
        warnings = sum(1 for x in run.log_lines() if x.get("level") in ("warning", "error"))
        return [how, f"{elapsed:.0f}", late, f"{cpu / elapsed * 1000:.1f}", lines, warnings]
    finally:
        run.stop()
        printer.stop()


def recovery_run(work: Path, broker: Broker, fault: str, status_back: bool,
                 down_for: float) -> float:
    printer = VPrinterProc(work / f"printer-r-{fault}-{status_back}", png=False).start()
    name = f"r-{fault.replace(' ', '-')}-{status_back}"
    run = DaemonRun(config(work / f"{name}.yaml", broker.port, printer.address,
                           status_back=status_back), work / f"{name}.log")
    watch = StateWatch(broker.port)
    try:
        run.start()
        watch.wait("online", 0)
        printer.set_state("paper_out" if fault == "paper out" else "offline")
        watch.wait("paper_out" if fault == "paper out" else "offline", 0)
        time.sleep(down_for)            # long enough for the backoff to reach its cap
        back = time.monotonic()
        printer.set_state("online")
        return watch.wait("online", back) - back
    finally:
        watch.close()
        run.stop()
        printer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dead", type=float, default=30.0, help="seconds each printer is dead")
    parser.add_argument("--rounds", type=int, default=3, help="recovery measurements each")
    parser.add_argument("--down", type=float, default=15.0,
                        help="seconds down before each recovery")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker").start()
        try:
            rows = [dead_run(work, broker, how, args.dead)
                    for how in ("powered off", "drop", "hung")]
            print(table(["dead printer", "seconds", "connections/s after 10 s",
                         "daemon CPU ms/s", "printer_state lines", "warnings"], rows))
            print()
            recovery: list[list[object]] = []
            for fault in ("paper out", "powered off"):
                for status_back in (True, False):
                    times = [recovery_run(work, broker, fault, status_back, args.down)
                             for _ in range(args.rounds)]
                    recovery.append([fault, "pushed (GS a)" if status_back else "polled",
                                     f"{statistics.median(times):.2f}", f"{max(times):.2f}"])
            print(table(["fault cleared", "status", "noticed after, median s", "max s"],
                        recovery))
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
