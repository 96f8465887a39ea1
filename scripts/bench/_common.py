"""Shared pieces of the benchmarks: processes the benchmark owns, configs, events, figures.

Every process here (mosquitto, virtual printers, the daemon, helper consumers) is started by
the benchmark and stopped by its pid; nothing touches the machine's own broker.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.broker import Broker, free_port, wait_port  # noqa: E402
from tests.vprinter import VPrinterProc  # noqa: E402

__all__ = [
    "KITCHEN_STATIONS", "ROOT", "Broker", "Consumer", "DaemonRun", "FakeUpstreamProc",
    "NaiveProc", "ProcSample",
    "VPrinterProc", "created_event", "free_port", "fs_type", "kitchen_config", "kitchen_event",
    "outbox_pending", "percentile", "printed", "proc_sample", "sqlite_bytes", "start_printer",
    "stop_on_signals", "stop_pid", "summary", "table", "wait_port", "write_config",
]

# Tickets that cannot be printed stay queued: a port where nothing listens.
OFFLINE_PRINTER = "tcp://127.0.0.1:9"


def write_config(path: Path, *, site: str, broker_port: int, client_id: str,
                 printer: str, state_dir: Path, receive_maximum: int | None = None,
                 max_batch: int | None = None, log_level: str = "info") -> Path:
    """One printer, one station that takes every item; as a small kitchen would have it."""
    mqtt: dict[str, Any] = {"url": f"mqtt://127.0.0.1:{broker_port}", "client_id": client_id}
    if receive_maximum is not None:
        mqtt["receive_maximum"] = receive_maximum
    if max_batch is not None:
        mqtt["max_batch"] = max_batch
    cfg: dict[str, Any] = {
        "site": site,
        "state_dir": str(state_dir),
        "mqtt": mqtt,
        "printers": [{"id": "hot", "connection": printer}],
        "stations": [{"id": "grill", "printer": "hot", "categories": ["grill", "mains"]}],
        "routing": {"default_station": "grill"},
        "log_level": log_level,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# The issue 12/17 kitchen: two stations, each with its own printer; station -> categories.
KITCHEN_STATIONS: dict[str, tuple[str, list[str]]] = {
    "grill": ("hot", ["grill", "mains"]),
    "bar": ("cold", ["drinks"]),
}


def kitchen_config(path: Path, *, site: str, broker_port: int, client_id: str,
                   printers: dict[str, str], state_dir: Path, upstream_url: str | None = None,
                   token_file: Path | None = None, http_port: int | None = None,
                   log_level: str = "info") -> Path:
    """Two printers (`printers`: printer id -> connection), two stations (KITCHEN_STATIONS),
    optionally an upstream and the HTTP listener; discovery as shipped (on)."""
    cfg: dict[str, Any] = {
        "site": site,
        "state_dir": str(state_dir),
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "client_id": client_id},
        "printers": [{"id": pid, "connection": conn} for pid, conn in printers.items()],
        "stations": [{"id": sid, "printer": pid, "categories": cats}
                     for sid, (pid, cats) in KITCHEN_STATIONS.items()],
        "routing": {"default_station": "grill"},
        "log_level": log_level,
    }
    if upstream_url is not None:
        assert token_file is not None
        cfg["upstream"] = {"url": upstream_url, "token_file": str(token_file)}
    if http_port is not None:
        cfg["http"] = {"listen": f"127.0.0.1:{http_port}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def kitchen_event(site: str, n: int, *, prefix: str = "k") -> tuple[str, bytes, str]:
    """(topic, payload, order_id) of an order.created with three lines over both stations:
    two for the grill, one for the bar, so every order is two tickets."""
    topic, payload, order_id = created_event(site, n, prefix=prefix)
    body = json.loads(payload)
    body["data"]["items"][2]["category"] = "drinks"
    return topic, json.dumps(body, separators=(",", ":")).encode(), order_id


def created_event(site: str, n: int, *, prefix: str = "b") -> tuple[str, bytes, str]:
    """(topic, payload, order_id) of a realistic order.created with three lines."""
    order_id = f"{prefix}-{n:06d}"
    body = {
        "event_id": f"evt-{order_id}-created",
        "type": "order.created",
        "order_id": order_id,
        "occurred_at": "2026-11-21T18:02:11Z",
        "source": {"channel": "pos", "device": "bench-pos"},
        "data": {
            "display_id": order_id,
            "fulfillment": {"type": "dine_in", "table": str(n % 40 + 1)},
            "items": [
                {"line_id": "l1", "name": "Adana kebap", "qty": 2, "category": "grill",
                 "modifiers": ["no onion"]},
                {"line_id": "l2", "name": "Lahmacun", "qty": 1, "category": "grill",
                 "note": "extra lemon"},
                {"line_id": "l3", "name": "Ayran", "qty": 3, "category": "mains"},
            ],
        },
    }
    topic = f"kitchen/{site}/orders/{order_id}/events"
    return topic, json.dumps(body, separators=(",", ":")).encode(), order_id


def stop_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so the `finally` blocks stop every process
    the bench started. (A shell's background job inherits SIGINT ignored; this undoes it.)"""
    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def stop_pid(proc: subprocess.Popen[bytes] | None, *, sig: int = signal.SIGTERM,
             timeout: float = 20.0) -> int | None:
    """Stop one process we started, by its pid; SIGKILL if it will not go."""
    if proc is None:
        return None
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


@dataclass(frozen=True)
class ProcSample:
    """What /proc says about one process at one moment (all threads together)."""

    at: float            # time.monotonic()
    cpu_s: float         # utime + stime
    rss_kib: int         # VmRSS
    hwm_kib: int         # VmHWM, the peak RSS so far
    write_bytes: int     # bytes this process caused to be sent to the storage layer
    wchar: int           # bytes it passed to write(2) and friends, to any file or socket


_TICK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / _TICK    # utime, stime (fields 14 and 15)
    status = {k: v for k, _, v in (line.partition(":") for line in
                                   Path(f"/proc/{pid}/status").read_text().splitlines())}
    io = {k: int(v) for k, _, v in (line.partition(": ") for line in
                                    Path(f"/proc/{pid}/io").read_text().splitlines())}
    return ProcSample(at=time.monotonic(), cpu_s=cpu_s,
                      rss_kib=int(status["VmRSS"].split()[0]),
                      hwm_kib=int(status["VmHWM"].split()[0]),
                      write_bytes=io["write_bytes"], wchar=io["wchar"])


def outbox_pending(db: Path) -> int:
    """Upstream records the daemon has not yet had accepted (read-only, beside the daemon)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state='pending'").fetchone()[0])
    finally:
        conn.close()


def start_printer(workdir: Path, name: str, stack: list[Any]) -> VPrinterProc:
    """A virtual printer without PNGs (workdir/printer-NAME), put on `stack` to be stopped."""
    proc = VPrinterProc(workdir / f"printer-{name}", png=False).start()
    stack.append(proc)
    return proc


def printed(printers: Sequence[VPrinterProc]) -> int:
    """Tickets these printers recorded since they started (a reset keeps the numbering)."""
    import httpx

    return sum(int(httpx.get(p.control_url + "/state", timeout=10).json()["last_seq"])
               for p in printers)


@dataclass
class Consumer:
    """One side of a comparison (the daemon, or the naive consumer): its topic root, its
    printers, its process and, for the daemon, its database."""

    who: str
    site: str
    printers: list[VPrinterProc]
    pid: int = 0
    db: Path | None = None
    printed_base: int = 0            # printed() counts from here

    def sample(self) -> ProcSample:
        return proc_sample(self.pid)

    def printed(self) -> int:
        return printed(self.printers) - self.printed_base


def sqlite_bytes(db: Path) -> dict[str, int]:
    """Sizes of the database, its WAL and its shared-memory index (0 when absent)."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        out[suffix or "db"] = path.stat().st_size if path.exists() else 0
    return out


def fs_type(path: Path) -> str:
    """The file system type `path` lives on (the longest mount point that holds it)."""
    path = path.resolve()
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mount = parts[1]
        if (path == Path(mount) or Path(mount) in path.parents) and len(mount) > len(best):
            best, kind = mount, parts[2]
    return kind


class FakeUpstreamProc:
    """`python -m edge.upstream.fake` in its own process, with its control port."""

    def __init__(self, workdir: Path, token: str = "bench-token") -> None:
        self.workdir = workdir
        self.token = token
        self.token_file = workdir / "upstream.token"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.control_url = ""

    def start(self) -> FakeUpstreamProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)     # a secret: the daemon refuses one others can read
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.upstream.fake", "--token-file", str(self.token_file)],
            stdout=subprocess.PIPE, cwd=ROOT)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.url = str(info["url"])
        self.control_url = f"http://127.0.0.1:{info['control_port']}"
        return self

    def state(self) -> dict[str, Any]:
        import httpx

        return dict(httpx.get(self.control_url + "/state", timeout=10).raise_for_status().json())

    def set_fault(self, mode: str, **extra: Any) -> None:
        import httpx

        httpx.post(self.control_url + "/fault", json={"mode": mode, **extra},
                   timeout=10).raise_for_status()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_pid(proc, timeout=10)


class NaiveProc:
    """scripts/bench/_naive.py in its own process: stations {id: (printer port, categories)}."""

    def __init__(self, broker_port: int, site: str, stations: dict[str, tuple[int, list[str]]],
                 *, transport: str = "dummy") -> None:
        args = [sys.executable, str(Path(__file__).with_name("_naive.py")),
                "--broker-port", str(broker_port), "--site", site, "--transport", transport]
        for station, (port, cats) in stations.items():
            args += ["--station", f"{station}:{port}:{','.join(cats)}"]
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        self.output: list[str] = []
        ready = threading.Event()
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.output.append(line)
                if "naive_ready" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(20) or proc.poll() is not None:
            self.stop()
            raise RuntimeError("naive consumer did not start: " + "\n".join(self.output))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_pid(proc, timeout=10)


@dataclass
class DaemonRun:
    """`python -m edge run --config FILE`, its output in a file (as journald would take it)."""

    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0          # time.time() just before the process was spawned
    extra_env: dict[str, str] = field(default_factory=dict)
    # py-spy attached to the process for its whole run, collapsed stacks written here.
    profile_to: Path | None = None
    # py-spy's sampling options: by default only the thread holding the GIL (Python CPU).
    profile_args: tuple[str, ...] = ("--gil",)
    # The log through a pipe that this script copies to log_path, as journald would take it:
    # then the daemon's own write_bytes (/proc/PID/io) are its database alone.
    log_pipe: bool = False
    # The interpreter the daemon runs under: by default the bench's own (the dev venv). A
    # production-like venv (scripts/bench/prod-venv.sh) lacks the test tools that the
    # daemon's libraries import when present (rich, click, trio, PySocks), which shows in RSS.
    # Either way the daemon runs this checkout's edge/ (cwd is the checkout, and `-m` puts
    # cwd first on sys.path): only the libraries come from that venv.
    python: str = sys.executable
    _spy: subprocess.Popen[bytes] | None = None
    _log_thread: threading.Thread | None = None

    @property
    def db(self) -> Path:
        cfg = yaml.safe_load(self.config.read_text())
        return Path(cfg["state_dir"]) / "kitchen-edge.db"

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> DaemonRun:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        log = self.log_path.open("ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [self.python, "-m", "edge", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE if self.log_pipe else log, stderr=subprocess.STDOUT,
            env=env, cwd=ROOT,
        )
        if self.log_pipe:
            self._log_thread = threading.Thread(target=_copy_lines, args=(self.proc, log),
                                                daemon=True)
            self._log_thread.start()
        else:
            log.close()
        if self.profile_to is not None:
            self.profile_start(self.profile_to)
        if wait_ready:
            self.wait_log("daemon_ready", timeout=timeout)
        return self

    def profile_start(self, to: Path) -> None:
        """Attach py-spy now (raw collapsed stacks to `to`, 250 samples a second)."""
        assert self.proc is not None and self._spy is None
        spy = Path(sys.executable).with_name("py-spy")
        self._spy = subprocess.Popen(
            [str(spy), "record", "--pid", str(self.proc.pid), "--rate", "250",
             "--format", "raw", *self.profile_args, "--output", str(to), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def profile_stop(self) -> None:
        """Detach py-spy; it writes its file on SIGINT, or by itself when the daemon ends."""
        spy, self._spy = self._spy, None
        if spy is None:
            return
        if spy.poll() is None and self.proc is not None:
            os.kill(spy.pid, signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_pid(spy, sig=signal.SIGKILL)

    def log_lines(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for raw in self.log_path.read_bytes().splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"event": "raw", "text": raw.decode(errors="replace")})
        return out

    def wait_log(self, name: str, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        needle = f'"event": "{name}"'.encode()
        while time.monotonic() < deadline:
            if self.log_path.exists() and needle in self.log_path.read_bytes():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"no {name} within {timeout}s: {self.tail()}")

    def tail(self, n: int = 10) -> str:
        if not self.log_path.exists():
            return ""
        return b"\n".join(self.log_path.read_bytes().splitlines()[-n:]).decode(errors="replace")

    def stop(self, timeout: float = 30.0) -> int | None:
        proc, self.proc = self.proc, None
        code = stop_pid(proc, timeout=timeout)
        reader, self._log_thread = self._log_thread, None
        if reader is not None:
            reader.join(timeout=10)
        # py-spy ends by itself when its target does, writing the profile on the way.
        self.profile_stop()
        return code


def _copy_lines(proc: subprocess.Popen[bytes], log: Any) -> None:
    """The daemon's output to its log file, line by line, until it closes its end."""
    assert proc.stdout is not None
    with log:
        for line in proc.stdout:
            log.write(line)
            log.flush()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a real observed value, no interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"n": float(len(values)), "p50": percentile(values, 50),
            "p90": percentile(values, 90), "p99": percentile(values, 99),
            "max": max(values) if values else float("nan"),
            "mean": statistics.fmean(values) if values else float("nan")}


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if k and i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def paho_client(port: int, client_id: str) -> Any:
    """A POS-like publisher: MQTT v5, QoS 1, many PUBLISHes in flight, nothing dropped."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_all(port: int, messages: Sequence[tuple[str, bytes]], *,
                client_id: str = "bench-pos", timeout: float = 120.0) -> float:
    """Publish at QoS 1 and wait for every PUBACK; returns the seconds it took."""
    client = paho_client(port, client_id)
    try:
        start = time.perf_counter()
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError("broker did not acknowledge every publish in time")
        return time.perf_counter() - start
    finally:
        client.loop_stop()
        client.disconnect()
