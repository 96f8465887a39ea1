"""Shared pieces of the benchmarks: processes the benchmark owns, configs, events, figures.

Every process here (mosquitto, virtual printers, the daemon, helper consumers) is started by
the benchmark and stopped by its pid; nothing touches the machine's own broker.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
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
    "ROOT", "Broker", "DaemonRun", "VPrinterProc", "created_event", "free_port", "percentile",
    "stop_pid", "summary", "table", "wait_port", "write_config",
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
    _spy: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        cfg = yaml.safe_load(self.config.read_text())
        return Path(cfg["state_dir"]) / "kitchen-edge.db"

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> DaemonRun:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        log = self.log_path.open("ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        log.close()
        if self.profile_to is not None:
            spy = Path(sys.executable).with_name("py-spy")
            self._spy = subprocess.Popen(
                [str(spy), "record", "--pid", str(self.proc.pid), "--rate", "250",
                 "--format", "raw", "--gil", "--output", str(self.profile_to),
                 "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_ready:
            self.wait_log("daemon_ready", timeout=timeout)
        return self

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
        spy, self._spy = self._spy, None
        if spy is not None:
            # py-spy ends by itself when its target does, writing the profile on the way.
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_pid(spy, sig=signal.SIGINT)
        return code


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
